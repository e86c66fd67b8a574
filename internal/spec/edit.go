package spec

import (
	"bytes"
	"fmt"

	"gopkg.in/yaml.v3"
)

// ForwardEdit is a forward as the CLI gives it, in spec syntax.
type ForwardEdit struct {
	Proto  string
	Port   string // "2222" or "8000-8010"
	To     string // "IP" or "IP:PORT"
	From   []string
	Listen []string
}

// networkNode finds networks.NAME in a parsed file.
func networkNode(doc *yaml.Node, name string) (*yaml.Node, error) {
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("not a guestnet spec (want a mapping with key networks)")
	}
	root := doc.Content[0]
	for i := 0; i < len(root.Content); i += 2 {
		if root.Content[i].Value != "networks" {
			continue
		}
		nets := root.Content[i+1]
		for j := 0; j+1 < len(nets.Content); j += 2 {
			if nets.Content[j].Value == name {
				return nets.Content[j+1], nil
			}
		}
	}
	return nil, fmt.Errorf("no network %q in this file", name)
}

// forwardsNode returns the network's forwards list, making it if asked.
func forwardsNode(net *yaml.Node, create bool) *yaml.Node {
	for i := 0; i+1 < len(net.Content); i += 2 {
		if net.Content[i].Value == "forwards" {
			return net.Content[i+1]
		}
	}
	if !create {
		return nil
	}
	seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	net.Content = append(net.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "forwards"}, seq)
	return seq
}

func scalar(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v} }

// EditForwards adds (add=true) or removes forwards of a network in a spec
// file's text and returns the new text, which is validated before it is
// returned: an edit that would make the file invalid changes nothing.
// Comments and the rest of the file are kept.
func EditForwards(file string, data []byte, network string, f ForwardEdit, add bool) ([]byte, int, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, 0, fmt.Errorf("%s: %w", file, err)
	}
	net, err := networkNode(&doc, network)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", file, err)
	}
	changed := 0
	if add {
		item := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Style: yaml.FlowStyle}
		item.Content = append(item.Content, scalar("proto"), scalar(f.Proto), scalar("port"), scalar(f.Port), scalar("to"), scalar(f.To))
		for key, vals := range map[string][]string{"from": f.From, "listen": f.Listen} {
			if len(vals) == 0 {
				continue
			}
			seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle}
			for _, v := range vals {
				seq.Content = append(seq.Content, scalar(v))
			}
			item.Content = append(item.Content, scalar(key), seq)
		}
		fw := forwardsNode(net, true)
		fw.Content = append(fw.Content, item)
		changed = 1
	} else if fw := forwardsNode(net, false); fw != nil {
		var keep []*yaml.Node
		for _, it := range fw.Content {
			m := map[string]string{"proto": "tcp"}
			for i := 0; i+1 < len(it.Content); i += 2 {
				m[it.Content[i].Value] = it.Content[i+1].Value
			}
			if m["proto"] == f.Proto && m["port"] == f.Port {
				changed++
				continue
			}
			keep = append(keep, it)
		}
		fw.Content = keep
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, 0, err
	}
	nets, err := Parse(file, out.Bytes())
	if err == nil {
		err = (&Spec{Networks: nets}).Validate()
	}
	if err != nil {
		return nil, 0, err
	}
	return out.Bytes(), changed, nil
}
