-- placeholder, replaced by the policy issue work
return {}
