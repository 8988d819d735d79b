"""schemathesis hooks for chute's contract run (scripts/api-contract.sh).

The resumable protocols send raw bytes under their own media types
(tus: application/offset+octet-stream, the IETF draft: application/partial-upload).
schemathesis knows application/octet-stream; these reuse its serializer.
"""

import schemathesis

schemathesis.serializer.alias(
    ["application/offset+octet-stream", "application/partial-upload"],
    "application/octet-stream",
)
