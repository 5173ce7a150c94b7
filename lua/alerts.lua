-- placeholder, replaced by the alerts work
return {}
