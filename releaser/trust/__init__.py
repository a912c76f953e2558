"""Trust: release keys per environment, signed overlay commits, what nodes verify.

``keys``     the release keyring (python-gnupg): one signing key per environment,
             rotation, the public keys a node is given, the overlay head last pushed.
``signing``  the settings git needs to sign an overlay commit with that key.
``ancestry`` the node-side checks around Portage's verifying sync: keys delivered,
             the head must descend from what the node last synced (anti-rollback)
             and be recent (freeze); the refusal names the attack.
``packages`` detached signatures of the binary packages kept for rollback.
``secrets``  the app's secrets, encrypted in its repository, installed at promote.
"""
