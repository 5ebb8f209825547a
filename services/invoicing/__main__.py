from shared.runtime import serve

serve("invoicing")
