vcl 4.1;
# stampede-bench ladder, peers rung: Varnish in front of origin-sim.

backend origin {
    .host = "127.0.0.1";
    .port = "18739";
}

sub vcl_recv {
    # Readiness probe for the bench (never reaches the origin).
    if (req.url == "/__ready") {
        return (synth(204));
    }
}

sub vcl_backend_response {
    set beresp.ttl = 2s;
    # Grace: past its TTL the object is still served for this long while
    # one background fetch refreshes it. 0s = no grace: requests for an
    # expired object wait on the waiting list for the one fetch.
    set beresp.grace = 5s;
    set beresp.keep = 0s;
}

sub vcl_deliver {
    # RFC 9211 Cache-Status for the bench: hit / stale hit (negative ttl) / forwarded.
    if (obj.hits > 0) {
        if (obj.ttl < 0s) {
            set resp.http.Cache-Status = "varnish; hit; ttl=-1";
        } else {
            set resp.http.Cache-Status = "varnish; hit";
        }
    } else {
        set resp.http.Cache-Status = "varnish; fwd=miss";
    }
}
