package model

// EVPNMaxMACsPerPort is how many MACs learned on one guest port of a
// stretched network a host announces over EVPN. Every announced MAC is a
// type-2 route on every other host (an FDB entry each, and a prefix
// counted against each peer's max_prefixes, whose excess shuts the whole
// session down): without a bound, one guest sending from random source
// MACs floods every host and cuts all of its host's guests off. A VM
// with nested guests behind it stays well below; the MACs over the
// bound still work on their own host, they are only not reachable from
// the others.
const EVPNMaxMACsPerPort = 64
