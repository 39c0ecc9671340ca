# Unit tests for required_tags.rego, run by `chimera policy test` (every `test_*` rule must be
# true). Tests live in the policies' package, so they can read `deny` directly.
package chimera

instance(tags) := {
	"address": "instance.a",
	"kind": "instance",
	"action": "create",
	"provider": "aws",
	"region": "us-east",
	"after": {"size": "small", "instance_type": "t3.small", "tags": tags},
}

tag_messages contains f.msg if {
	some f in deny
	f.address == "instance.a"
}

test_every_required_tag_present if {
	msgs := tag_messages with input as {"changes": [instance({"owner": "o", "cost-center": "c"})], "cost": {}}
	count(msgs) == 0
}

test_a_missing_tag_is_denied if {
	msgs := tag_messages with input as {"changes": [instance({"owner": "o"})], "cost": {}}
	msgs == {"instance.a has no `cost-center` tag"}
}

test_an_empty_tag_counts_as_missing if {
	msgs := tag_messages with input as {"changes": [instance({"owner": "", "cost-center": "c"})], "cost": {}}
	msgs == {"instance.a has no `owner` tag"}
}

test_deletes_are_not_checked if {
	gone := {"address": "instance.a", "kind": "instance", "action": "delete", "after": null}
	msgs := tag_messages with input as {"changes": [gone], "cost": {}}
	count(msgs) == 0
}
