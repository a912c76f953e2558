"""Trust: release keys per environment, signed overlay commits, what nodes verify.

``keys``     the release keyring (python-gnupg): one signing key per environment,
             rotation, the public keys a node is given.
``signing``  the environment git needs to sign an overlay commit with that key.
``ancestry`` the node-side check Portage lacks: a synced overlay must descend from
             what the node last synced (anti-rollback), and the refusal's reason.
"""
