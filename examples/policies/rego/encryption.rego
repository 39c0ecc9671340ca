# Every volume is encrypted.
package chimera

deny contains finding if {
	some change in input.changes
	change.kind == "volume"
	change.action in {"create", "update", "replace"}
	object.get(change.after, "encrypted", false) != true
	finding := {
		"address": change.address,
		"msg": sprintf("%s is not encrypted", [change.address]),
	}
}
