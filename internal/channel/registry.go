package channel

import (
	"sync"
)

// Registry finds channels by conn id and by clientid. The zero value is not
// ready: use NewRegistry. Safe for concurrent use.
type Registry struct {
	mu         sync.RWMutex
	byID       map[string]*Channel
	byClientID map[string]*Channel // authenticated channels only
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{byID: map[string]*Channel{}, byClientID: map[string]*Channel{}}
}

func (r *Registry) add(c *Channel) {
	r.mu.Lock()
	r.byID[c.id] = c
	r.mu.Unlock()
}

func (r *Registry) connected(c *Channel, clientID string) {
	r.mu.Lock()
	r.byClientID[clientID] = c
	r.mu.Unlock()
}

func (r *Registry) remove(c *Channel) {
	r.mu.Lock()
	delete(r.byID, c.id)
	cid := c.ClientID()
	if r.byClientID[cid] == c {
		delete(r.byClientID, cid)
	}
	r.mu.Unlock()
}

// Get returns the channel with conn id, if it is still registered (until
// its OnSocketClosed was answered).
func (r *Registry) Get(id string) (*Channel, bool) {
	r.mu.RLock()
	c, ok := r.byID[id]
	r.mu.RUnlock()
	return c, ok
}

// ByClientID returns the authenticated channel with that clientid.
func (r *Registry) ByClientID(clientID string) (*Channel, bool) {
	r.mu.RLock()
	c, ok := r.byClientID[clientID]
	r.mu.RUnlock()
	return c, ok
}

// All returns the registered channels in no particular order.
func (r *Registry) All() []*Channel {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*Channel, 0, len(r.byID))
	for _, c := range r.byID {
		out = append(out, c)
	}
	return out
}

// Connected is the number of authenticated channels.
func (r *Registry) Connected() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.byClientID)
}

// Len is the number of registered channels.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.byID)
}
