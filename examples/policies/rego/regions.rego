# Resources run only on the providers and in the regions you allow.
package chimera

# Edit: the providers and the (abstract) regions resources may use.
allowed_providers := {"aws", "local"}

allowed_regions := {"us-east", "eu-west"}

deny contains finding if {
	some change in input.changes
	change.action in {"create", "update", "replace"}
	not change.provider in allowed_providers
	finding := {
		"address": change.address,
		"msg": sprintf("%s uses provider `%s`, which is not allowed (allowed: %s)", [change.address, change.provider, concat(", ", sort(allowed_providers))]),
	}
}

deny contains finding if {
	some change in input.changes
	change.action in {"create", "update", "replace"}
	not change.region in allowed_regions
	finding := {
		"address": change.address,
		"msg": sprintf("%s is in region `%s`, which is not allowed (allowed: %s)", [change.address, change.region, concat(", ", sort(allowed_regions))]),
	}
}
