vcl 4.1;
# stampede-bench ladder, real-traffic rung: Varnish's default VCL in front of
# origin-sim — the origin's Cache-Control sets the TTL (the built-in VCL runs
# after these subroutines: no-store, private, Set-Cookie, Vary: * and
# uncacheable statuses become hit-for-miss) — with grace for stale delivery.

backend origin {
    .host = "127.0.0.1";
    .port = "30492";
}

sub vcl_recv {
    # Readiness probe for the bench (never reaches the origin).
    if (req.url == "/__ready") {
        return (synth(204));
    }
}

sub vcl_backend_response {
    # Past its TTL an object is still served for this long while one
    # background fetch refreshes it.
    set beresp.grace = 10s;
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
