package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/fake"
	"github.com/guestnet/guestnet/internal/spec"
)

// scaleSpecText is n NAT networks with DNS and forwards port forwards
// spread over them, as bench/apply makes them.
func scaleSpecText(n, forwards int) string {
	var b strings.Builder
	b.WriteString("networks:\n")
	per := 0
	if forwards > 0 {
		per = (forwards + n - 1) / n
	}
	port := 10000
	for i := range n {
		fmt.Fprintf(&b, "  n%d: {mode: nat, bridge: gn%d, ipv4: 10.%d.%d.1/24", i, i, 100+i/256, i%256)
		if per > 0 && forwards > 0 {
			b.WriteString(", forwards: [")
			for j := 0; j < per && forwards > 0; j++ {
				if j > 0 {
					b.WriteString(", ")
				}
				fmt.Fprintf(&b, "{proto: tcp, port: %d, to: \"10.%d.%d.10:22\"}", port, 100+i/256, i%256)
				port++
				forwards--
			}
			b.WriteString("]")
		}
		b.WriteString("}\n")
	}
	return b.String()
}

func loadText(b testing.TB, text string) *spec.Spec {
	p := filepath.Join(b.TempDir(), "spec.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		b.Fatal(err)
	}
	s, err := spec.Load(p)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkConvergeNoop is the engine's part of a no-op apply of 1,000
// networks with 10,000 forwards on the fake kernel (spec load included,
// as the CLI does it); BenchmarkConvergeOneMore one more network on a
// host with 1,000 and back. No kernel, so this is guestnet's own cost.
func BenchmarkConvergeNoop(b *testing.B) {
	k := &fake.Kernel{Host: baseHost()}
	e := New(k, filepath.Join(b.TempDir(), "state.json"))
	text := scaleSpecText(1000, 10000)
	if _, err := e.Converge(context.Background(), loadText(b, text)); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		p, err := e.Converge(context.Background(), loadText(b, text))
		if err != nil || len(p.Actions) != 0 {
			b.Fatal(p.Actions, err)
		}
	}
}

func BenchmarkConvergeOneMore(b *testing.B) {
	k := &fake.Kernel{Host: baseHost()}
	e := New(k, filepath.Join(b.TempDir(), "state.json"))
	s1000, s1001 := loadText(b, scaleSpecText(1000, 0)), loadText(b, scaleSpecText(1001, 0))
	if _, err := e.Converge(context.Background(), s1000); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := e.Converge(context.Background(), s1001); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if _, err := e.Converge(context.Background(), s1000); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
