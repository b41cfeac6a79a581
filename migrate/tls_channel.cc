#include "migrate/tls_channel.h"

#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "migrate/bounded_file.h"

namespace ferry {

// TLS 1.3 only: no downgrade to a version with weaker handshakes, and no renegotiation.
constexpr const char* kTlsPriority = "NORMAL:-VERS-ALL:+VERS-TLS1.3";
/// The largest CA, certificate or key file read (PEM; a CA bundle of a few hundred certificates).
constexpr size_t kMaxCredentialFile = size_t{1} << 20;

class TlsCredentials {
public:
    TlsCredentials() = default;
    ~TlsCredentials() {
        if (cred_ != nullptr) gnutls_certificate_free_credentials(cred_);
    }
    TlsCredentials(const TlsCredentials&) = delete;
    TlsCredentials& operator=(const TlsCredentials&) = delete;

    gnutls_certificate_credentials_t cred_ = nullptr;
};

namespace {

Error tls_error(const std::string& what, int rc) {
    return make_error(ErrorCode::kFailed, what + ": " + gnutls_strerror(rc));
}

/// Waits until fd is ready for events or the deadline. Context: migration thread.
/// @return false on timeout or a poll error
bool wait_fd(int fd, short events, Deadline deadline) {
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        pollfd p{fd, events, 0};
        const int r = poll(&p, 1, static_cast<int>(std::clamp<int64_t>(left.count(), 0, 1 << 30)));
        if (r > 0) return true;
        if (r == 0 || errno != EINTR) return false;
    }
}

/// A TLS session over a socket it does not own; the session is closed (close_notify, best
/// effort, never waiting) and freed with the channel.
class TlsChannel final : public ByteChannel {
public:
    TlsChannel(gnutls_session_t s, int fd, std::shared_ptr<const TlsCredentials> creds)
        : s_(s), fd_(fd), creds_(std::move(creds)) {}
    ~TlsChannel() override {
        gnutls_bye(s_, GNUTLS_SHUT_WR);  // non-blocking socket: one try
        gnutls_deinit(s_);
    }
    TlsChannel(const TlsChannel&) = delete;
    TlsChannel& operator=(const TlsChannel&) = delete;

    Result<size_t> read_some(uint8_t* dst, size_t n, Deadline deadline) override {
        for (;;) {
            const ssize_t r = gnutls_record_recv(s_, dst, n);
            if (r >= 0) return static_cast<size_t>(r);
            if (r == GNUTLS_E_PREMATURE_TERMINATION) return size_t{0};  // closed without bye
            if (r != GNUTLS_E_AGAIN && r != GNUTLS_E_INTERRUPTED)
                return tls_error("migration stream (TLS)", static_cast<int>(r));
            if (!wait_fd(fd_, POLLIN, deadline))
                return make_error(ErrorCode::kFailed, "migration stream: timed out");
        }
    }

    Result<size_t> write_some(const uint8_t* src, size_t n, Deadline deadline) override {
        for (;;) {
            const ssize_t w = gnutls_record_send(s_, src, n);
            if (w >= 0) return static_cast<size_t>(w);
            if (w != GNUTLS_E_AGAIN && w != GNUTLS_E_INTERRUPTED)
                return tls_error("sending the stream (TLS)", static_cast<int>(w));
            if (!wait_fd(fd_, POLLOUT, deadline))
                return make_error(ErrorCode::kFailed, "sending the stream: timed out");
        }
    }

    int fd() const override { return fd_; }

private:
    gnutls_session_t s_;
    int fd_;
    std::shared_ptr<const TlsCredentials> creds_;  // outlives the session that uses them
};

}  // namespace

Result<std::shared_ptr<const TlsCredentials>> tls_load_credentials(const std::string& dir,
                                                                   TlsRole role) {
    const std::string who = role == TlsRole::kServer ? "server" : "client";
    const std::string ca = dir + "/ca-cert.pem";
    const std::string cert = dir + "/" + who + "-cert.pem";
    const std::string key = dir + "/" + who + "-key.pem";
    // Read here, not by GnuTLS by name: the files are refused unless regular (a FIFO in the
    // directory would hold the control thread in open(2)) and bounded before they are parsed.
    std::vector<uint8_t> pem[3];
    // The private key's copy is wiped however this returns (GnuTLS keeps its own).
    struct WipeKey {
        std::vector<uint8_t>& bytes;
        // An empty vector's data() may be null, which explicit_bzero must not be given.
        ~WipeKey() {
            if (!bytes.empty()) explicit_bzero(bytes.data(), bytes.size());
        }
    } wipe_key{pem[2]};
    const std::string* names[3] = {&ca, &cert, &key};
    for (int i = 0; i < 3; ++i) {
        auto bytes = read_file_bounded(*names[i], kMaxCredentialFile);
        if (!bytes)
            return make_error(ErrorCode::kInvalidParams, "tls_creds: " + bytes.error().message);
        pem[i] = std::move(*bytes);
    }
    auto datum = [](std::vector<uint8_t>& b) {
        return gnutls_datum_t{b.data(), static_cast<unsigned int>(b.size())};
    };
    const gnutls_datum_t ca_pem = datum(pem[0]), cert_pem = datum(pem[1]), key_pem = datum(pem[2]);
    auto c = std::make_shared<TlsCredentials>();
    if (int rc = gnutls_certificate_allocate_credentials(&c->cred_); rc < 0)
        return tls_error("tls_creds", rc);
    const int cas = gnutls_certificate_set_x509_trust_mem(c->cred_, &ca_pem, GNUTLS_X509_FMT_PEM);
    if (cas <= 0)
        return make_error(
            ErrorCode::kInvalidParams,
            "tls_creds: " + ca + ": " + (cas < 0 ? gnutls_strerror(cas) : "no certificate in it"));
    if (int rc =
            gnutls_certificate_set_x509_key_mem(c->cred_, &cert_pem, &key_pem, GNUTLS_X509_FMT_PEM);
        rc < 0)
        return make_error(ErrorCode::kInvalidParams,
                          "tls_creds: " + cert + " / " + key + ": " + gnutls_strerror(rc));
    return std::shared_ptr<const TlsCredentials>(std::move(c));
}

Result<std::unique_ptr<ByteChannel>> tls_handshake(int fd,
                                                   std::shared_ptr<const TlsCredentials> creds,
                                                   TlsRole role, const std::string& peer_name,
                                                   Deadline deadline) {
    if (!creds || peer_name.empty())
        return make_error(ErrorCode::kFailed, "TLS: no credentials or no expected peer name");
    const int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
        return make_error(ErrorCode::kFailed, std::string("TLS: fcntl: ") + std::strerror(errno));
    const bool server = role == TlsRole::kServer;
    gnutls_session_t s = nullptr;
    if (int rc = gnutls_init(
            &s, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK | GNUTLS_NO_TICKETS);
        rc < 0)
        return tls_error("TLS", rc);
    // From here the channel owns s: every refusal below frees it.
    auto chan = std::make_unique<TlsChannel>(s, fd, creds);
    const char* err_pos = nullptr;
    if (int rc = gnutls_priority_set_direct(s, kTlsPriority, &err_pos); rc < 0)
        return tls_error("TLS priority", rc);
    if (int rc = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, creds->cred_); rc < 0)
        return tls_error("TLS", rc);
    if (server) gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
    // The peer's certificate must name peer_name and be meant for its end of the exchange.
    gnutls_typed_vdata_st check[2] = {};
    check[0].type = GNUTLS_DT_DNS_HOSTNAME;
    check[0].data = reinterpret_cast<unsigned char*>(const_cast<char*>(peer_name.c_str()));
    check[1].type = GNUTLS_DT_KEY_PURPOSE_OID;
    check[1].data = reinterpret_cast<unsigned char*>(
        const_cast<char*>(server ? GNUTLS_KP_TLS_WWW_CLIENT : GNUTLS_KP_TLS_WWW_SERVER));
    gnutls_session_set_verify_cert2(s, check, 2, 0);
    gnutls_transport_set_int(s, fd);
    for (;;) {
        const int rc = gnutls_handshake(s);
        if (rc == GNUTLS_E_SUCCESS) break;
        if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) {
            if (!wait_fd(fd, gnutls_record_get_direction(s) ? POLLOUT : POLLIN, deadline))
                return make_error(ErrorCode::kFailed, "TLS handshake: timed out");
            continue;
        }
        if (rc == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
            gnutls_datum_t why{};
            const unsigned status = gnutls_session_get_verify_cert_status(s);
            std::string text = "certificate not accepted";
            if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &why, 0) ==
                0) {
                text = reinterpret_cast<const char*>(why.data);
                gnutls_free(why.data);
            }
            return make_error(ErrorCode::kFailed, "TLS: the peer's certificate (expected name " +
                                                      peer_name + "): " + text);
        }
        return tls_error("TLS handshake", rc);
    }
    // Belt and braces: the handshake's own checks ran, and they ran on a certificate.
    unsigned int peers = 0;
    if (gnutls_protocol_get_version(s) != GNUTLS_TLS1_3 ||
        gnutls_certificate_get_peers(s, &peers) == nullptr || peers == 0 ||
        gnutls_session_get_verify_cert_status(s) != 0)
        return make_error(ErrorCode::kFailed, "TLS: the peer is not authenticated");
    return std::unique_ptr<ByteChannel>(std::move(chan));
}

}  // namespace ferry
