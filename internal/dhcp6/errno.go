package dhcp6

import "golang.org/x/sys/unix"

// errAddrInUse is what joining a group the socket already joined on that
// interface returns: a bridge that is served again.
var errAddrInUse error = unix.EADDRINUSE
