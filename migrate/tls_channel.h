// TLS 1.3 with a certificate on both ends for the migration channel (GnuTLS). A stream writes
// firewall state into the target, so the target (the TLS server) requires a client
// certificate signed by the operator's CA and carrying the name it expects, and the source
// (the client) checks the target's certificate the same way. The credentials directory is laid
// out like QEMU's tls-creds-x509: ca-cert.pem, server-cert.pem, server-key.pem,
// client-cert.pem, client-key.pem. Context: control (loading), migration thread (the rest).
#pragma once

#include <memory>
#include <string>

#include "migrate/transport.h"

namespace ferry {

/// Which end of the exchange this ferryd is: the target listens (server), the source connects.
enum class TlsRole { kServer, kClient };

/// A CA and this end's certificate and key, loaded once per migrate.send / migrate.receive.
class TlsCredentials;

/// Loads dir/ca-cert.pem and dir/{server,client}-{cert,key}.pem for role.
/// Context: control. @return the credentials, or kInvalidParams naming the file and the reason
Result<std::shared_ptr<const TlsCredentials>> tls_load_credentials(const std::string& dir,
                                                                   TlsRole role);

/// Runs the TLS 1.3 handshake on the connected socket fd (which it makes non-blocking; the
/// caller keeps owning and closes it after the channel is gone) until deadline. The peer must
/// present a certificate that chains to the CA, is valid now, and names peer_name (SAN dNSName,
/// else CN; an IP address SAN when peer_name is an address). Context: migration thread.
/// @return the channel, or kFailed saying why the peer was refused; nothing is read past the
///         handshake
Result<std::unique_ptr<ByteChannel>> tls_handshake(int fd,
                                                   std::shared_ptr<const TlsCredentials> creds,
                                                   TlsRole role, const std::string& peer_name,
                                                   Deadline deadline);

}  // namespace ferry
