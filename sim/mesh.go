package sim

import "github.com/libp2p/go-libp2p/core/peer"

// MeshShape is the shape of the gossip mesh the live nodes held at the end
// of a run: the graph whose edges join two nodes when either has the
// other among its gossipsub mesh peers. A mesh in several parts carries a
// batch from one part to another only by ways outside the mesh (IHAVE
// gossip, sync, gap pulls), a heartbeat or a sync interval later (see
// node.Config.MeshDegreeLow).
type MeshShape struct {
	// Parts is how many connected parts the live nodes' mesh has, a link
	// counting whichever side holds it; Largest the nodes in the largest.
	Parts   int `json:"parts"`
	Largest int `json:"largest"`
	// OneLink and NoLink count the live nodes with one mesh link and with
	// none.
	OneLink int `json:"one_link"`
	NoLink  int `json:"no_link"`
	// OneWay counts the links only one side holds: gossipsub's mesh is
	// not symmetric (a peer whose stream closed leaves a node's mesh with
	// no PRUNE sent, and a PRUNE can be lost), and a batch crosses such a
	// link only from the side that holds it. A mesh in one part with
	// one-way links may still not carry every batch everywhere.
	OneWay int `json:"one_way"`
}

// meshShape measures the graph of n nodes whose links are given as pairs
// of node indexes, {a, b} when a holds b in its mesh (repeats allowed);
// nodes not live are left out.
func meshShape(n int, live []bool, links [][2]int) MeshShape {
	adj := make([]map[int]bool, n)
	for i := range adj {
		adj[i] = make(map[int]bool)
	}
	held := make(map[[2]int]bool, len(links))
	for _, l := range links {
		a, b := l[0], l[1]
		if a == b || !live[a] || !live[b] {
			continue
		}
		held[l] = true
		adj[a][b], adj[b][a] = true, true
	}
	var s MeshShape
	for l := range held {
		if !held[[2]int{l[1], l[0]}] {
			s.OneWay++
		}
	}
	seen := make([]bool, n)
	for i := range n {
		if !live[i] {
			continue
		}
		switch len(adj[i]) {
		case 0:
			s.NoLink++
		case 1:
			s.OneLink++
		}
		if seen[i] {
			continue
		}
		s.Parts++
		size, stack := 0, []int{i}
		seen[i] = true
		for len(stack) > 0 {
			x := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			size++
			for y := range adj[x] {
				if !seen[y] {
					seen[y] = true
					stack = append(stack, y)
				}
			}
		}
		s.Largest = max(s.Largest, size)
	}
	return s
}

// meshShape reads the live nodes' meshes now.
func (c *cluster) meshShape() MeshShape {
	index := make(map[peer.ID]int, len(c.members))
	live := make([]bool, len(c.members))
	for i, m := range c.members {
		index[m.id] = i
		live[i] = m.up
	}
	var links [][2]int
	for i, m := range c.members {
		if !m.up {
			continue
		}
		for _, p := range m.space.MeshPeers() {
			if j, ok := index[p]; ok {
				links = append(links, [2]int{i, j})
			}
		}
	}
	return meshShape(len(c.members), live, links)
}
