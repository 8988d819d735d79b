"""Makes a self-signed certificate for chute's TLS tests, with the `cryptography` package (chute
never makes its own): tls_cert.py DIR NAME [COMMON_NAME]. Writes DIR/NAME.pem (the certificate,
for 127.0.0.1 and localhost, valid for a day; it is also the CA a client trusts) and
DIR/NAME.key (its P-256 private key, PKCS#8)."""

import datetime
import ipaddress
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

folder, name = Path(sys.argv[1]), sys.argv[2]
common = sys.argv[3] if len(sys.argv) > 3 else name
folder.mkdir(parents=True, exist_ok=True)
key = ec.generate_private_key(ec.SECP256R1())
subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (
    x509.CertificateBuilder()
    .subject_name(subject)
    .issuer_name(subject)
    .public_key(key.public_key())
    .serial_number(x509.random_serial_number())
    .not_valid_before(now - datetime.timedelta(minutes=5))
    .not_valid_after(now + datetime.timedelta(days=1))
    .add_extension(
        x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        ),
        critical=False,
    )
    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    .sign(key, hashes.SHA256())
)
(folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
(folder / f"{name}.key").write_bytes(
    key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
)
