package model

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"slices"
	"strconv"
	"strings"
)

// digest hashes what Equal compares, in the order Equal sees it (base
// chains by hook, regular chains by name, elements sorted), written field
// by field into the hash: at 1,000 networks, rendering the whole table as
// text (String) to hash it cost several times the plan it served. Equal
// rulesets have the same digest, whatever the order their chains were
// made in.
func (rs Ruleset) digest() string {
	d := digester{h: sha256.New()}
	chains := make([]*Chain, len(rs.Chains))
	for i := range rs.Chains {
		chains[i] = &rs.Chains[i]
	}
	byOrder := func(a, b *Chain) int {
		return cmp.Or(cmp.Compare(hookRank(a.Hook), hookRank(b.Hook)), strings.Compare(regularName(*a), regularName(*b)))
	}
	if !slices.IsSortedFunc(chains, byOrder) {
		slices.SortStableFunc(chains, byOrder)
	}
	for _, c := range chains {
		d.str("chain", c.Name, c.Type, c.Hook)
		d.num(c.Priority, len(c.Rules))
		for _, r := range c.Rules {
			d.rule(r)
		}
	}
	vmaps := slices.Clone(rs.Vmaps)
	slices.SortStableFunc(vmaps, func(a, b Vmap) int { return cmp.Compare(vmapRank(a.Name), vmapRank(b.Name)) })
	for _, v := range vmaps {
		es := slices.Clone(v.Elements)
		SortVmapElements(v.Key, es)
		d.str("vmap", v.Name, string(v.Key))
		d.num(len(es))
		for _, e := range es {
			d.str(e.Name, e.Prefix.String(), e.Chain)
		}
	}
	fs := slices.Clone(rs.Forwards)
	SortForwards(fs)
	d.str("forwards")
	d.num(len(fs))
	for _, f := range fs {
		d.str(f.Src.String(), f.Dst.String(), f.Proto, f.To.String())
		d.num(f.Port, f.ToPort)
	}
	fl := slices.Clone(rs.Floating)
	slices.SortFunc(fl, func(a, b Floating) int { return cmp.Or(a.Public.Compare(b.Public), a.Guest.Compare(b.Guest)) })
	d.str("floating")
	d.num(len(fl))
	for _, f := range fl {
		d.str(f.Public.String(), f.Guest.String(), f.Uplink)
	}
	d.str("docker-user")
	d.num(len(rs.DockerUser))
	for _, r := range rs.DockerUser {
		d.rule(r)
	}
	if len(rs.DockerUser6) > 0 { // absent, it leaves the digest of an IPv4-only ruleset as it was
		d.str("docker-user6")
		d.num(len(rs.DockerUser6))
		for _, r := range rs.DockerUser6 {
			d.rule(r)
		}
	}
	return d.sum()
}

// digester writes fields into a hash through a buffer, each field ended
// by a zero byte (no field holds one), so no two contents write the same
// bytes.
type digester struct {
	h   hash.Hash
	buf []byte
}

func (d *digester) str(ss ...string) {
	for _, s := range ss {
		d.buf = append(append(d.buf, s...), 0)
	}
	d.spill()
}

func (d *digester) num(ns ...int) {
	for _, n := range ns {
		d.buf = append(strconv.AppendInt(d.buf, int64(n), 10), 0)
	}
	d.spill()
}

func (d *digester) rule(r Rule) {
	d.str(r.Network, string(r.Verdict))
	d.num(len(r.Match))
	for _, m := range r.Match {
		d.str(string(m.Kind), strconv.FormatBool(m.Neg), m.Name, m.Prefix.String())
		d.num(m.Port)
	}
}

func (d *digester) spill() {
	if len(d.buf) >= 1<<15 {
		d.h.Write(d.buf)
		d.buf = d.buf[:0]
	}
}

func (d *digester) sum() string {
	d.h.Write(d.buf)
	return hex.EncodeToString(d.h.Sum(nil))
}
