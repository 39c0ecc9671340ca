# Instances use only the sizes and instance types you allow.
package chimera

# Edit: the abstract sizes and the provider instance types instances may use.
allowed_sizes := {"small", "medium"}

allowed_instance_types := {"local.small", "local.medium", "t3.small", "t3.medium"}

deny contains finding if {
	some change in instances
	size := change.after.size
	not size in allowed_sizes
	finding := {
		"address": change.address,
		"msg": sprintf("%s has size `%s`, which is not allowed (allowed: %s)", [change.address, size, concat(", ", sort(allowed_sizes))]),
	}
}

deny contains finding if {
	some change in instances
	not change.after.instance_type in allowed_instance_types
	finding := {
		"address": change.address,
		"msg": sprintf("%s has instance type `%s`, which is not allowed", [change.address, change.after.instance_type]),
	}
}

instances contains change if {
	some change in input.changes
	change.kind == "instance"
	change.action in {"create", "update", "replace"}
}
