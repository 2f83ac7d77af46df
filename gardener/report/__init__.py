"""Tables and figures made from result data (JSON-ready dicts), never from models."""
