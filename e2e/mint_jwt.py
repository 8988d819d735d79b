"""Mints the signed tokens (JWTs) chute's tests present, with PyJWT: chute never checks its
own tokens.

  mint_jwt.py keys DIR   writes key pairs into DIR: rsa, rsa2 (RS256), ec (ES256), ed (EdDSA),
                         each NAME.pem (private, PKCS#8) and NAME.pub.pem (public, SPKI)
  mint_jwt.py            reads a JSON list of token specs on stdin, prints a JSON list of tokens

A spec: {"alg": "HS256" | "RS256" | "ES256" | "EdDSA" | "none" | "HS256-raw",
         "key": a secret, or the path of a private PEM ("HS256-raw": the path of any file,
                whose bytes are the HMAC key, signed by hand with hashlib: the algorithm
                confusion attack, which PyJWT itself refuses to mint),
         "claims": {...}, "exp_in": seconds from now, "nbf_in": seconds from now,
         "headers": {...}}
"""

import base64
import hashlib
import hmac
import json
import sys
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


def keys(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    made = {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "rsa2": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec": ec.generate_private_key(ec.SECP256R1()),
        "ed": ed25519.Ed25519PrivateKey.generate(),
    }
    for name, key in made.items():
        (folder / f"{name}.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (folder / f"{name}.pub.pem").write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
        )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(spec: dict) -> str:
    claims = dict(spec.get("claims", {}))
    now = int(time.time())
    if "exp_in" in spec:
        claims["exp"] = now + spec["exp_in"]
    if "nbf_in" in spec:
        claims["nbf"] = now + spec["nbf_in"]
    alg = spec["alg"]
    headers = spec.get("headers")
    if alg == "HS256-raw":
        key = Path(spec["key"]).read_bytes()
        head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = b64(json.dumps(claims).encode())
        sig = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{b64(sig)}"
    if alg == "none":
        return jwt.encode(claims, None, algorithm="none", headers=headers)
    key = spec["key"]
    if alg != "HS256":
        key = Path(key).read_bytes()
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "keys":
        keys(Path(sys.argv[2]))
    else:
        print(json.dumps([mint(s) for s in json.load(sys.stdin)]))
