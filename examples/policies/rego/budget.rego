# The stack's monthly cost stays within a budget, and one plan does not raise it too much.
# Costs are the plan's estimate (`cost`, in its `currency`); unpriced resources count as 0.
package chimera

# Edit: the monthly budget, the largest increase one plan may make (absolute and in percent),
# and the share of the budget (in percent) above which a plan warns.
monthly_budget := 1000

max_increase := 200

max_increase_percent := 50

warning_percent := 80

deny contains msg if {
	input.cost.monthly_after > monthly_budget
	msg := sprintf("the monthly cost would be %v %s, over the budget of %v", [input.cost.monthly_after, input.cost.currency, monthly_budget])
}

deny contains msg if {
	input.cost.delta > max_increase
	msg := sprintf("the plan adds %v %s a month, more than the %v one plan may add", [input.cost.delta, input.cost.currency, max_increase])
}

deny contains msg if {
	input.cost.delta_percent > max_increase_percent
	msg := sprintf("the plan raises the monthly cost by %v%%, more than %v%%", [input.cost.delta_percent, max_increase_percent])
}

warn contains msg if {
	input.cost.monthly_after > (monthly_budget * warning_percent) / 100
	input.cost.monthly_after <= monthly_budget
	msg := sprintf("the monthly cost would be %v %s, over %v%% of the budget", [input.cost.monthly_after, input.cost.currency, warning_percent])
}
