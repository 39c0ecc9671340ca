# No firewall admits the whole internet to SSH or RDP. A rule counts when its port range
# covers the port (or it allows every protocol) and one of its CIDRs is 0.0.0.0/0 or ::/0.
package chimera

# Edit: the ports nobody may reach from the internet, and what to call them.
admin_ports := {22: "ssh", 3389: "rdp"}

internet := {"0.0.0.0/0", "::/0"}

deny contains finding if {
	some change in input.changes
	change.kind == "firewall"
	change.action in {"create", "update", "replace"}
	some port, service in admin_ports
	some rule in change.after.ingress
	opens(rule, port)
	some cidr in rule.cidrs
	cidr in internet
	finding := {
		"address": change.address,
		"msg": sprintf("%s admits the internet to port %d (%s)", [change.address, port, service]),
	}
}

opens(rule, _) if rule.protocol == "all"

opens(rule, port) if {
	rule.protocol in {"tcp", "udp"}
	object.get(rule, "from_port", null) == null
}

opens(rule, port) if {
	rule.protocol in {"tcp", "udp"}
	rule.from_port <= port
	port <= rule.to_port
}
