package libvirt

import (
	"strings"
	"testing"

	"github.com/guestnet/guestnet/internal/spec"
)

// Hostile and odd XML (break17): what libvirt would read differently, or
// what would end up in the spec unseen, is refused at its line.

const okNet = `<network><name>a</name><bridge name='br-a'/><ip address='10.1.0.1' prefix='24'/></network>`

// TestRefusedXML: each input converts to nothing, and the error names the
// line and what is wrong.
func TestRefusedXML(t *testing.T) {
	for _, tc := range []struct{ name, xml, want string }{
		// A second <network> (or anything after the first) used to be
		// dropped without a word: the spec held the first network alone.
		{"two networks", okNet + "\n<network><name>b</name><forward mode='nat'/></network>", "(stdin):2: a second element <network> after the <network>"},
		{"trailing text", okNet + "\ngarbage", "(stdin):2: text \"garbage\" after the <network>"},
		// libvirt reads the first of these (XPath ./bridge[1]); the decoder
		// kept the last, so the spec named another bridge or another mode.
		{"two bridges", "<network><name>a</name>\n<bridge name='br-a'/>\n<bridge name='br-b'/><ip address='10.1.0.1' prefix='24'/></network>", "(stdin):3: a second <bridge> (the first is at line 2)"},
		{"two forwards", "<network><name>a</name><forward mode='nat'/>\n<forward mode='route'/><bridge name='br-a'/><ip address='10.1.0.1' prefix='24'/></network>", "(stdin):2: a second <forward> (the first is at line 1)"},
		{"two dhcp", "<network><name>a</name><bridge name='br-a'/><ip address='10.1.0.1' prefix='24'><dhcp><range start='10.1.0.2' end='10.1.0.9'/></dhcp>\n<dhcp/></ip></network>", "(stdin):2: a second <dhcp> (the first is at line 1)"},
		// An element of another namespace is not libvirt's, whatever its
		// local name: it used to be read as libvirt's <name>.
		{"foreign namespace", "<network xmlns:x='urn:x'>\n<x:name>a</x:name><bridge name='br-a'/><ip address='10.1.0.1' prefix='24'/></network>", "(stdin):2: <name> of namespace urn:x is not libvirt's <name>"},
		{"foreign attribute", "<network xmlns:x='urn:x'><name>a</name>\n<bridge name='br-a' x:name='br9'/><ip address='10.1.0.1' prefix='24'/></network>", "(stdin):2: attribute name of namespace urn:x in <bridge> is not libvirt's name"},
		{"attribute twice", "<network><name>a</name>\n<bridge name='br-a' name='br9'/><ip address='10.1.0.1' prefix='24'/></network>", "(stdin):2: attribute name given twice in <bridge>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Convert("(stdin)", []byte(tc.xml))
			if err == nil {
				t.Fatalf("converted, want an error %q; got:\n%s", tc.want, Render([]*Result{r}))
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to hold %q", err, tc.want)
			}
		})
	}
}

// TestRenderFileNameStaysComment: the file name goes into a comment; a
// name with a newline (a file of --all DIR) used to end the comment and
// put its own YAML, here a network that moves eth0 into a bridge, into
// the printed spec.
func TestRenderFileNameStaysComment(t *testing.T) {
	file := "d/x\n  evil:\n    mode: bridge\n    bridge: br9\n    uplink: eth0\n  #.xml"
	r, err := Convert(file, []byte(okNet))
	if err != nil {
		t.Fatal(err)
	}
	out := Render([]*Result{r})
	pf, err := spec.ParseFile("out.yaml", []byte(out))
	if err != nil {
		t.Fatalf("the rendered spec does not load: %v\n%s", err, out)
	}
	if len(pf.Networks) != 1 || pf.Networks[0].Name != "a" {
		var names []string
		for _, n := range pf.Networks {
			names = append(names, n.Name)
		}
		t.Fatalf("the spec holds networks %v, want [a] alone:\n%s", names, out)
	}
}

// TestQuoteControl: a value with a newline or another control character
// is quoted, so the YAML holds it as one string (which spec then judges),
// never as YAML of its own.
func TestQuoteControl(t *testing.T) {
	for _, s := range []string{"br\na", "br\ta", "br\ra", "a\x00b", "br\u2028a"} {
		q := quote(s)
		if !strings.HasPrefix(q, `"`) || strings.ContainsAny(q, "\n\r\t\x00\u2028") {
			t.Errorf("quote(%q) = %q, want a double-quoted one-line string", s, q)
		}
	}
}
