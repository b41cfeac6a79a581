"""Certificates for the migration channel's TLS, made at test time with GnuTLS's certtool:
a CA, each host's server and client certificates in QEMU's tls-creds-x509 layout, and a rogue's.
"""
import subprocess


def certtool(*args):
    subprocess.run(["certtool", *args], check=True, capture_output=True, timeout=60)


def make_ca(d, name):
    """A CA (its key and self-signed certificate) in directory d. @return (cert, key) paths"""
    key, cert, tmpl = d / f"{name}-key.pem", d / f"{name}-cert.pem", d / f"{name}.info"
    tmpl.write_text(f'cn = "{name}"\nca\ncert_signing_key\nexpiration_days = 2\n')
    certtool("--generate-privkey", "--key-type=ecdsa", "--outfile", str(key))
    certtool("--generate-self-signed", "--load-privkey", str(key), "--template", str(tmpl),
             "--outfile", str(cert))
    return cert, key


def issue(d, ca, name, role, out, ip=None):
    """A certificate for name (CN and dNSName; and iPAddress ip) meant for role ("server" or
    "client"), signed by ca, written as out-cert.pem and out-key.pem in d."""
    key, cert, tmpl = d / f"{out}-key.pem", d / f"{out}-cert.pem", d / f"{out}.info"
    tmpl.write_text(f'cn = "{name}"\ndns_name = "{name}"\n' +
                    (f"ip_address = {ip}\n" if ip else "") +
                    f"tls_www_{role}\nsigning_key\nexpiration_days = 2\n")
    certtool("--generate-privkey", "--key-type=ecdsa", "--outfile", str(key))
    certtool("--generate-certificate", "--load-privkey", str(key), "--load-ca-certificate",
             str(ca[0]), "--load-ca-privkey", str(ca[1]), "--template", str(tmpl),
             "--outfile", str(cert))
    return cert, key


def make_pki(root):
    """Credentials directories (QEMU's tls-creds-x509 layout) of host ferry-a (the source) and
    ferry-b (the target, also named 127.0.0.1), both from one CA; and a rogue's certificates:
    ferry-a's name from another CA, and a right-CA certificate named mallory."""
    ca, other = make_ca(root, "ca"), make_ca(root, "other-ca")
    hosts = {}
    for host in ("ferry-a", "ferry-b"):
        d = root / host
        d.mkdir()
        (d / "ca-cert.pem").write_bytes(ca[0].read_bytes())
        issue(d, ca, host, "server", "server", ip="127.0.0.1")
        issue(d, ca, host, "client", "client")
        hosts[host] = str(d)
    rogue_dir = root / "rogue"
    rogue_dir.mkdir()
    return {"a": hosts["ferry-a"], "b": hosts["ferry-b"], "ca": str(ca[0]),
            "other_ca": issue(rogue_dir, other, "ferry-a", "client", "other"),
            "mallory": issue(rogue_dir, ca, "mallory", "client", "mallory")}
