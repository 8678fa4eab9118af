package netns

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Shape is a token-bucket limit (tc tbf) on one direction of a link. Latency here is tbf's
// queueing bound (how long a packet may wait for tokens before it is dropped), not added delay:
// this kernel has no netem.
type Shape struct {
	Rate    int64         // bits per second, > 0
	Burst   int64         // bucket size in bytes; 0: 256 KiB
	Latency time.Duration // queueing bound; 0: 50 ms
}

// Mbit is n megabits per second, for Shape.Rate.
func Mbit(n int64) int64 { return n * 1_000_000 }

func (s Shape) withDefaults() (Shape, error) {
	if s.Burst == 0 {
		s.Burst = 256 << 10
	}
	if s.Latency == 0 {
		s.Latency = 50 * time.Millisecond
	}
	if s.Rate <= 0 || s.Burst < 2048 || s.Latency < time.Millisecond {
		return s, fmt.Errorf("rate %d bit/s, burst %d B, latency %s: %w", s.Rate, s.Burst, s.Latency, ErrInvalidShape)
	}
	return s, nil
}

func (s Shape) args() []string {
	return []string{"tbf", "rate", strconv.FormatInt(s.Rate, 10) + "bit", "burst", strconv.FormatInt(s.Burst, 10),
		"latency", strconv.FormatInt(s.Latency.Microseconds(), 10) + "us"}
}

// ShapeEgress limits what the node sends (its uploads), replacing any earlier limit.
func (nd *Node) ShapeEgress(ctx context.Context, s Shape) error {
	return shape(ctx, nd.Namespace, nd.If, s)
}

// ShapeIngress limits what the node receives (its downloads): a limit on the bridge side of its
// link, so it applies to traffic from every other node.
func (nd *Node) ShapeIngress(ctx context.Context, s Shape) error {
	return shape(ctx, nd.net.hub, nd.HubIf, s)
}

// Unshape removes both limits; a direction without one is fine.
func (nd *Node) Unshape(ctx context.Context) error {
	for _, l := range [][2]string{{nd.Namespace, nd.If}, {nd.net.hub, nd.HubIf}} {
		q, err := rootQdisc(ctx, l[0], l[1])
		if err != nil {
			return fmt.Errorf("node %s: %w", nd.Name, err)
		}
		if q.Kind != "tbf" {
			continue
		}
		if err := run(ctx, "tc", "-n", l[0], "qdisc", "del", "dev", l[1], "root"); err != nil {
			return fmt.Errorf("node %s: unshape %s: %w", nd.Name, l[1], err)
		}
	}
	return nil
}

// EgressShape reads the limit on what the node sends back from the kernel; ok is false when
// there is none.
func (nd *Node) EgressShape(ctx context.Context) (s Shape, ok bool, err error) {
	return readShape(ctx, nd.Namespace, nd.If)
}

// IngressShape reads the limit on what the node receives back from the kernel.
func (nd *Node) IngressShape(ctx context.Context) (s Shape, ok bool, err error) {
	return readShape(ctx, nd.net.hub, nd.HubIf)
}

func shape(ctx context.Context, ns, dev string, s Shape) error {
	s, err := s.withDefaults()
	if err != nil {
		return fmt.Errorf("shape %s in %s: %w", dev, ns, err)
	}
	args := append([]string{"tc", "-n", ns, "qdisc", "replace", "dev", dev, "root"}, s.args()...)
	if err := run(ctx, args...); err != nil {
		return fmt.Errorf("shape %s in %s: %w", dev, ns, err)
	}
	return nil
}

type qdisc struct {
	Kind    string `json:"kind"`
	Root    bool   `json:"root"`
	Options struct {
		Rate  int64 `json:"rate"`  // bytes per second
		Burst int64 `json:"burst"` // bytes
		Lat   int64 `json:"lat"`   // microseconds
	} `json:"options"`
}

func rootQdisc(ctx context.Context, ns, dev string) (qdisc, error) {
	out, err := output(ctx, "tc", "-n", ns, "-j", "qdisc", "show", "dev", dev)
	if err != nil {
		return qdisc{}, err
	}
	var qs []qdisc
	if err := json.Unmarshal([]byte(out), &qs); err != nil {
		return qdisc{}, fmt.Errorf("qdiscs of %s in %s: %w", dev, ns, err)
	}
	for _, q := range qs {
		if q.Root {
			return q, nil
		}
	}
	return qdisc{}, nil
}

func readShape(ctx context.Context, ns, dev string) (Shape, bool, error) {
	q, err := rootQdisc(ctx, ns, dev)
	if err != nil || q.Kind != "tbf" {
		return Shape{}, false, err
	}
	return Shape{Rate: q.Options.Rate * 8, Burst: q.Options.Burst, Latency: time.Duration(q.Options.Lat) * time.Microsecond}, true, nil
}
