"""The Lambda front door's source. `handler.py` is zipped alone (see `dogops.lambda_package`), so it
imports only boto3 and the stdlib; nothing here may import the rest of dogops."""
