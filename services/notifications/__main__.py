from shared.runtime import serve

serve("notifications")
