from shared.runtime import serve

serve("ordering")
