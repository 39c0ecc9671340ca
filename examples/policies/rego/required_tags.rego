# Every resource a plan creates or changes carries the tags your organisation requires.
package chimera

# Edit: the tags every resource must have (with a non-empty value).
required_tags := ["owner", "cost-center"]

deny contains finding if {
	some change in input.changes
	change.action in {"create", "update", "replace"}
	some tag in required_tags
	not has_tag(change.after, tag)
	finding := {
		"address": change.address,
		"msg": sprintf("%s has no `%s` tag", [change.address, tag]),
	}
}

has_tag(after, tag) if {
	after.tags[tag] != ""
}
