# Unit tests for open_ports.rego, run by `chimera policy test`.
package chimera

firewall(rule) := {"changes": [{
	"address": "firewall.f",
	"kind": "firewall",
	"action": "create",
	"provider": "aws",
	"region": "us-east",
	"after": {"ingress": [rule], "egress": [], "tags": {"owner": "o", "cost-center": "c"}},
}], "cost": {}}

port_messages contains f.msg if {
	some f in deny
	f.address == "firewall.f"
}

test_ssh_from_the_internet_is_denied if {
	msgs := port_messages with input as firewall({"protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["0.0.0.0/0"]})
	msgs == {"firewall.f admits the internet to port 22 (ssh)"}
}

test_a_range_covering_both_ports_is_denied_twice if {
	msgs := port_messages with input as firewall({"protocol": "tcp", "from_port": 1, "to_port": 5000, "cidrs": ["::/0"]})
	msgs == {"firewall.f admits the internet to port 22 (ssh)", "firewall.f admits the internet to port 3389 (rdp)"}
}

test_every_protocol_counts if {
	msgs := port_messages with input as firewall({"protocol": "all", "from_port": null, "to_port": null, "cidrs": ["0.0.0.0/0"]})
	count(msgs) == 2
}

test_ssh_from_inside_is_allowed if {
	msgs := port_messages with input as firewall({"protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["10.0.0.0/16"]})
	count(msgs) == 0
}

test_a_range_next_to_the_port_is_allowed if {
	msgs := port_messages with input as firewall({"protocol": "tcp", "from_port": 3390, "to_port": 3400, "cidrs": ["0.0.0.0/0"]})
	count(msgs) == 0
}
