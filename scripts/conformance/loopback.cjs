// Preloaded (node --require) into the suite's origin server: server/server.mjs
// calls `server.listen(port)`, which binds every interface. This keeps it on
// 127.0.0.1 only, as every server in this project's tests.
'use strict'
const net = require('net')
const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (...args) {
  const portOnly = (typeof args[0] === 'number' || typeof args[0] === 'string') &&
    (args.length === 1 || typeof args[1] === 'function')
  if (portOnly) args.splice(1, 0, '127.0.0.1')
  return listen.apply(this, args)
}
