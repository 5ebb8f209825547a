"""The account portal (issue 16): customers' and operators' web pages over the public APIs."""
