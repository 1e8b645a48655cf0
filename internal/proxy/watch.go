package proxy

import "time"

// watch and unwatch stand for net/http's background read, which cancels a
// request whose client hung up. Most requests are answered before a
// watcher would be worth its cost, so it starts only once a request has
// waited watchDelay (after its body is read): it then reads the client
// connection, and EOF or an error there ends the exchange.
func (c *conn) watch(wc *workerConn) {
	c.cur = wc
	c.watchAbort.Store(false)
	if !c.body.eof.Load() {
		c.watchState.Store(watchPending)
		return
	}
	c.watchState.Store(watchArmed)
	c.timer.Reset(watchDelay)
}

// armWatch runs when the request body has been read in full.
func (c *conn) armWatch() {
	if c.watchState.CompareAndSwap(watchPending, watchArmed) {
		c.timer.Reset(watchDelay)
	}
}

func (c *conn) watchFire() {
	if !c.watchState.CompareAndSwap(watchArmed, watchRunning) {
		return
	}
	// No deadline while watching. unwatch sets abort before it sets a past
	// deadline, so checking abort after clearing the deadline cannot miss it.
	c.nc.SetReadDeadline(time.Time{})
	if !c.watchAbort.Load() {
		_, err := c.br.Peek(1)
		if err != nil && !c.watchAbort.Load() && !isTimeout(err) {
			c.lost()
		}
	}
	c.watchState.Store(watchDone)
	c.watchDone <- struct{}{}
}

// lost records that the client went away and ends the exchange: it closes
// the worker connection (or cancels a local handler).
func (c *conn) lost() {
	c.clientGone.Store(true)
	if wc := c.cur; wc != nil {
		wc.abort()
	}
	if cancel := c.localCancel; cancel != nil {
		cancel()
	}
}

// unwatch stops the watcher and reports whether the client is still there.
func (c *conn) unwatch() bool {
	c.timer.Stop()
	for {
		switch st := c.watchState.Load(); st {
		case watchPending, watchArmed:
			if !c.watchState.CompareAndSwap(st, watchOff) {
				continue
			}
		case watchRunning, watchDone:
			c.watchAbort.Store(true)
			if st == watchRunning {
				c.nc.SetReadDeadline(aLongTimeAgo)
			}
			<-c.watchDone
			c.rdl = aLongTimeAgo // unknown now: set it afresh next time
			c.watchState.Store(watchOff)
		}
		return !c.clientGone.Load()
	}
}

// interruptBody stops a body reader that still reads the client; the
// connection is not reused after that.
func (c *conn) interruptBody() {
	if c.body.eof.Load() {
		return
	}
	c.interrupted.Store(true)
	c.nc.SetReadDeadline(aLongTimeAgo)
	c.rdl = aLongTimeAgo
	c.closing = true
}
