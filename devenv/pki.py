"""Certificates for the local control plane: one CA, serving certs, client certs, the SA signing key.

Each component gets its own client identity (system:kube-scheduler, system:kube-controller-manager,
an admin in system:masters) so that the cluster's bootstrap RBAC applies as in a real cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from headway.api.tls import certificate, name, new_key, pem_cert, pem_key


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


class Pki:
    """A CA in `directory` that issues the certificates the control plane needs."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._ca_key = new_key()
        ca_name = name("headway-dev-ca")
        self._ca_cert = certificate(ca_name, self._ca_key.public_key(), issuer=ca_name, signer=self._ca_key, ca=True)
        self.ca = self._write("ca", self._ca_key, self._ca_cert)

    def _write(self, stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> CertPair:
        pair = CertPair(self.dir / f"{stem}.crt", self.dir / f"{stem}.key")
        pair.key.write_bytes(pem_key(key))
        pair.key.chmod(0o600)
        pair.cert.write_bytes(pem_cert(cert))
        return pair

    def issue(
        self,
        stem: str,
        cn: str,
        *,
        org: str | None = None,
        client: bool = False,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
    ) -> CertPair:
        key = new_key()
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        cert = certificate(
            name(cn, org),
            key.public_key(),
            issuer=self._ca_cert.subject,
            signer=self._ca_key,
            ca=False,
            usages=[usage],
            dns=dns,
            ips=ips,
        )
        return self._write(stem, key, cert)

    def service_account_keys(self) -> CertPair:
        """The key pair that signs and verifies ServiceAccount tokens (cert field holds the public key)."""
        key = new_key()
        pair = CertPair(self.dir / "sa.pub", self.dir / "sa.key")
        pair.key.write_bytes(pem_key(key))
        pair.key.chmod(0o600)
        pair.cert.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        return pair
