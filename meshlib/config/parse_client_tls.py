"""DestinationRule ``trafficPolicy.tls`` (Istio ``ClientTLSSettings``) → :class:`ClientTls`.

A TLS setting meshlib cannot honour is an error here, never a silent
plaintext connection later. Rules, from Istio's ``ValidateTLS`` and the
``ClientTLSSettings`` documentation:

- ``MUTUAL`` needs ``clientCertificate`` and ``privateKey``;
- ``insecureSkipVerify: true`` contradicts ``caCertificates`` and
  ``subjectAltNames`` (and ``caCrl``: nothing is verified to revoke);
- ``ISTIO_MUTUAL`` takes its certificates from the workload identity: the
  file fields and ``insecureSkipVerify`` must be empty (``sni`` and
  ``subjectAltNames`` stay allowed, as istiod uses them);
- ``credentialName`` names a Kubernetes secret read by a gateway or sidecar
  over SDS: there is none in-process, so it is refused with a clear message.

File paths are used as written when absolute; a relative path is relative
to the directory of the YAML file that names it (and stored resolved).
Every file the settings name is read when the configuration loads: it must
exist and parse (PEM certificates, a private key matching the certificate, a
CRL), so a typo is reported with file, line and field instead of failing the
first request. Files are at most :data:`MAX_PEM_BYTES`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from meshlib.config.fields import Fields
from meshlib.config.model import ClientTls, TlsMode

TLS_FIELDS = frozenset(
    {
        "mode",
        "clientCertificate",
        "privateKey",
        "caCertificates",
        "credentialName",
        "subjectAltNames",
        "sni",
        "insecureSkipVerify",
        "caCrl",
    }
)
MODES: tuple[TlsMode, ...] = ("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL")
MAX_PEM_BYTES = 1 << 20  # a CA bundle of a few hundred certificates fits easily
MAX_SUBJECT_ALT_NAMES = 256
_FILE_FIELDS = ("caCertificates", "clientCertificate", "privateKey", "caCrl")


def parse_client_tls(tls: Fields) -> ClientTls:
    """Validate one ``tls`` block and return its settings (DISABLE when too broken to use)."""
    mode_text = tls.enum("mode", MODES) or "DISABLE"
    mode: TlsMode = "DISABLE"
    for candidate in MODES:
        if candidate == mode_text:
            mode = candidate
    values = {key: tls.string(key) or "" for key in (*_FILE_FIELDS, "sni", "credentialName")}
    for key in _FILE_FIELDS:
        if values[key] and not Path(values[key]).is_absolute():
            # Relative to the YAML file that names it, so validation and use agree wherever they run.
            values[key] = str(Path(tls.sink.file).parent / values[key])
    sans = tuple(tls.string_list("subjectAltNames") or ())
    if len(sans) > MAX_SUBJECT_ALT_NAMES:
        tls.error("subjectAltNames", f"at most {MAX_SUBJECT_ALT_NAMES} names are supported")
    for index, name in enumerate(sans):
        if not name:
            tls.sink.error(tls.line("subjectAltNames"), f"{tls.at('subjectAltNames')}[{index}]", "must not be empty")
    skip_verify = bool(tls.boolean("insecureSkipVerify"))

    credential = bool(values["credentialName"])
    if credential:
        tls.error(
            "credentialName",
            "credentialName (a Kubernetes secret served over SDS) is not supported in-process; "
            "use caCertificates / clientCertificate / privateKey file paths",
        )
        if mode in ("SIMPLE", "MUTUAL") and any(values[key] for key in _FILE_FIELDS):
            tls.error(None, "cannot specify client certificates or CA certificate or CA CRL if credentialName is set")
    if mode == "ISTIO_MUTUAL":
        for key in _FILE_FIELDS:
            if values[key]:
                tls.error(key, "must be empty with ISTIO_MUTUAL (the certificates come from the workload identity)")
        if skip_verify:
            tls.error("insecureSkipVerify", "cannot be set with ISTIO_MUTUAL (peers are always verified)")
    if mode == "MUTUAL" and not credential:  # Istio: with credentialName the files come from the secret
        for key, what in (("clientCertificate", "client certificate"), ("privateKey", "private key")):
            if not values[key]:
                tls.error(key, f"{what} required for mutual tls")
    if skip_verify and mode in ("SIMPLE", "MUTUAL"):
        for key in ("caCertificates", "caCrl"):
            if values[key]:
                tls.error(key, "cannot be set when insecureSkipVerify is true (nothing is verified)")
        if sans:
            tls.error("subjectAltNames", "cannot be set when insecureSkipVerify is true (nothing is verified)")
    if mode == "DISABLE":
        return ClientTls()
    if mode in ("SIMPLE", "MUTUAL"):
        _check_files(tls, values)
    return ClientTls(
        mode=mode,
        ca_certificates=values["caCertificates"] if mode != "ISTIO_MUTUAL" else "",
        client_certificate=values["clientCertificate"] if mode == "MUTUAL" else "",
        private_key=values["privateKey"] if mode == "MUTUAL" else "",
        sni=values["sni"],
        subject_alt_names=sans,
        insecure_skip_verify=skip_verify and mode != "ISTIO_MUTUAL",
        ca_crl=values["caCrl"] if mode != "ISTIO_MUTUAL" else "",
    )


def _check_files(tls: Fields, values: dict[str, str]) -> None:
    """Every named file exists, is small enough and parses as what the field says it is."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    contents: dict[str, bytes] = {}
    for key in _FILE_FIELDS:
        path = values[key]
        if not path:
            continue
        data = _read(tls, key, path)
        if data is None:
            continue
        try:
            if key == "privateKey":
                load_pem_private_key(data, password=None)
            elif key == "caCrl":
                x509.load_pem_x509_crl(data)
            elif not x509.load_pem_x509_certificates(data):
                raise ValueError("no certificate")
        except (ValueError, TypeError) as exc:
            what = {"privateKey": "an unencrypted PEM private key", "caCrl": "a PEM certificate revocation list"}
            tls.error(key, f"{path}: not {what.get(key, 'PEM certificates')} ({_short(exc)})")
            continue
        contents[key] = data
    cert, key_pem = contents.get("clientCertificate"), contents.get("privateKey")
    if cert is not None and key_pem is not None:
        leaf = x509.load_pem_x509_certificates(cert)[0]
        private_key = load_pem_private_key(key_pem, password=None)
        if leaf.public_key() != private_key.public_key():
            tls.error("privateKey", f"{values['privateKey']}: does not match the key of {values['clientCertificate']}")


def _read(tls: Fields, key: str, path: str) -> bytes | None:
    """The file's bytes: a regular file (never a device or FIFO that would block), at most MAX_PEM_BYTES."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            tls.error(key, f"{path}: not a regular file")
            return None
        with open(path, "rb") as file:
            data = file.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        tls.error(key, f"{path}: cannot read ({exc.strerror or exc})")
        return None
    if len(data) > MAX_PEM_BYTES:
        tls.error(key, f"{path}: larger than {MAX_PEM_BYTES} bytes")
        return None
    return data


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
