package dns

import (
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// poller waits on many sockets with one goroutine: an epoll set of its
// own, itself waited on by Go's runtime poller (an epoll descriptor is
// readable when one of its sockets is), so that no thread blocks and a
// socket with nothing to read costs no goroutine.
type poller struct {
	f  *os.File // the epoll descriptor, in Go's poller
	rc syscall.RawConn

	mu sync.Mutex
	by map[int32]func() // socket -> what to do when it is readable
}

func newPoller() (*poller, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("dns: epoll_create: %w", err)
	}
	if err := unix.SetNonblock(ep, true); err != nil {
		unix.Close(ep)
		return nil, fmt.Errorf("dns: epoll descriptor: %w", err)
	}
	f := os.NewFile(uintptr(ep), "dns-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("dns: epoll descriptor: %w", err)
	}
	p := &poller{f: f, rc: rc, by: map[int32]func(){}}
	go p.run()
	return p, nil
}

// add calls ready (on the poller's goroutine: it must not block) each
// time socket c is readable, until remove. ready reads until EAGAIN.
func (p *poller) add(c syscall.Conn, ready func(fd int)) (fd int, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	if cerr := rc.Control(func(s uintptr) { fd = int(s) }); cerr != nil {
		return -1, cerr
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.by[int32(fd)] = func() { ready(fd) }
	err = p.ctl(unix.EPOLL_CTL_ADD, fd)
	if err != nil {
		delete(p.by, int32(fd))
		return -1, fmt.Errorf("dns: epoll_ctl add: %w", err)
	}
	return fd, nil
}

// remove stops watching fd; the caller closes the socket after, so that
// the poller never reads a descriptor number that was reused.
func (p *poller) remove(fd int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.by, int32(fd))
	p.ctl(unix.EPOLL_CTL_DEL, fd)
}

func (p *poller) ctl(op, fd int) (err error) {
	cerr := p.rc.Control(func(ep uintptr) {
		err = unix.EpollCtl(int(ep), op, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)})
	})
	if cerr != nil {
		return cerr
	}
	return err
}

func (p *poller) close() { p.f.Close() }

// run handles readable sockets until the poller is closed.
func (p *poller) run() {
	events := make([]unix.EpollEvent, 64)
	for {
		err := p.rc.Read(func(ep uintptr) bool {
			n, err := unix.EpollWait(int(ep), events, 0)
			if n <= 0 {
				return err != nil && err != unix.EINTR // nothing ready: wait for Go's poller
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			for _, e := range events[:n] {
				if ready := p.by[e.Fd]; ready != nil {
					ready()
				}
			}
			return true
		})
		if err != nil {
			return // closed
		}
	}
}
