from shared.runtime import serve

serve("lifecycle")
