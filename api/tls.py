"""X.509 certificates, made with `cryptography`: the one certificate builder headway has.

The local cluster's CA and the certificates it issues (`headway.devenv.pki`) and the operator's
self-signed webhook certificate (`headway.operator.admission`) are all built here. Keys are ECDSA P-256.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=365)
_BACKDATE = dt.timedelta(minutes=5)
"""Certificates are valid from a little before now: a peer whose clock runs behind still accepts them."""


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePublicKey,
    *,
    issuer: x509.Name,
    signer: ec.EllipticCurvePrivateKey,
    ca: bool,
    usages: Sequence[x509.ObjectIdentifier] = (),
    dns: Iterable[str] = (),
    ips: Iterable[str] = (),
    validity: dt.timedelta = VALIDITY,
) -> x509.Certificate:
    """A certificate for `key`, signed by `signer` (the key itself, with issuer == subject, for a
    self-signed one). A CA may sign certificates and CRLs; `usages` are extended key usages (server or
    client authentication); `dns` and `ips` become subject alternative names, the names TLS checks."""
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(signer, hashes.SHA256())


def self_signed_server(hostnames: Iterable[str], *, validity: dt.timedelta = VALIDITY) -> tuple[bytes, bytes]:
    """A serving certificate that is its own CA, for clients that are handed it as their trust root (an
    admission webhook's caBundle): PEM certificate and key. Each hostname is a DNS name or an IP address;
    unspecified addresses (0.0.0.0, ::) are left out, as nobody can dial them. The common name is the first
    DNS name, else the first address (TLS clients check the alternative names, not the common name)."""
    hosts = list(hostnames)
    dns: list[str] = []
    ips: list[str] = []
    for host in hosts:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            if host not in dns:
                dns.append(host)
            continue
        if not ip.is_unspecified and str(ip) not in ips:
            ips.append(str(ip))
    if not dns and not ips:
        raise ValueError(f"no host name or address to certify among {hosts!r}")
    key = new_key()
    subject = name((dns or ips)[0])
    cert = certificate(
        subject,
        key.public_key(),
        issuer=subject,
        signer=key,
        ca=True,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        dns=dns,
        ips=ips,
        validity=validity,
    )
    return pem_cert(cert), pem_key(key)
