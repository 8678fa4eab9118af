package v5

import (
	"fmt"
	"strings"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/digest"
)

// nodeDigest computes the v5 Merkle digest of n from what it holds (builder/src/core/node.rs
// dump_node_data_with_reader, builder/src/core/v5.rs v5_digest_node, rafsv5_validate_inode in
// rafs/src/metadata/layout/v5.rs): a regular file hashes its chunk digests in order, a symlink its
// target, a directory its children's stored digests in name order, anything else nothing.
func nodeDigest(alg rafs.Digester, n *rafs.Node) rafs.Digest {
	h := digest.New(alg)
	in := n.Inode
	switch {
	case in.IsDir():
		for _, c := range n.Children {
			h.Write(c.Inode.Digest[:])
		}
	case in.IsReg():
		for i := range in.Chunks {
			h.Write(in.Chunks[i].Digest[:])
		}
	case in.IsSymlink():
		h.Write([]byte(in.Symlink))
	}
	var d rafs.Digest
	copy(d[:], h.Sum(nil))
	return d
}

// Verify recomputes every inode's Merkle digest, children before parents and in name order, and
// fails on the first inode whose stored digest differs, naming its path; the error wraps
// rafs.ErrCorrupt. A directory's digest is checked against its children's stored digests, so a
// single bad digest is reported at the inode that holds it.
func Verify(img *rafs.Image) error {
	if img == nil || img.Root == nil {
		return rafs.Corruptf("image has no root")
	}
	checked := make(map[*rafs.Inode]bool)
	return postOrder(img.Root, func(n *rafs.Node, path func() string) error {
		in := n.Inode
		if !in.IsDir() {
			if checked[in] {
				return nil // another link to a file already checked
			}
			checked[in] = true
		}
		if got := nodeDigest(img.Digester, n); got != in.Digest {
			return rafs.Corruptf("inode digest mismatch at %s: stored %s, computed %s", path(), in.Digest, got)
		}
		return nil
	})
}

// postOrder calls fn for every node of the tree under root after all of its children, visiting
// children in slice order, without recursion (trees may be deep). fn gets a function that returns
// the node's absolute path, and runs only once all children have inodes. It fails on a nil child,
// a node without an inode, or a node reached twice (a cycle or a shared subtree).
func postOrder(root *rafs.Node, fn func(n *rafs.Node, path func() string) error) error {
	type frame struct {
		n    *rafs.Node
		next int
	}
	stack := []frame{{n: root}}
	seen := map[*rafs.Node]bool{root: true}
	path := func() string {
		if len(stack) == 1 {
			return "/"
		}
		var b strings.Builder
		for _, f := range stack[1:] {
			b.WriteByte('/')
			b.WriteString(f.n.Name)
		}
		return b.String()
	}
	for len(stack) > 0 {
		top := &stack[len(stack)-1]
		if top.n.Inode == nil {
			return fmt.Errorf("v5: %s has no inode", path())
		}
		if top.next < len(top.n.Children) {
			c := top.n.Children[top.next]
			top.next++
			if c == nil || seen[c] {
				return fmt.Errorf("v5: %s has a nil or repeated child at index %d", path(), top.next-1)
			}
			seen[c] = true
			stack = append(stack, frame{n: c})
			continue
		}
		if err := fn(top.n, path); err != nil {
			return err
		}
		stack = stack[:len(stack)-1]
	}
	return nil
}
