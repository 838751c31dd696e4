"""Deployment: the consortium file and the key/certificate kits a real consortium runs on.

No torch and no flwr here: provisioning must run on a plain admin machine.
"""
