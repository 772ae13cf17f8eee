package keymesh

import (
	"errors"
	"time"

	keymeshv1 "github.com/keymesh/keymesh/clients/go/gen/keymesh/v1"
	"google.golang.org/grpc/status"
)

// ErrorDetailOf returns the keymesh.v1.ErrorDetail the server attached to err's gRPC status, or
// nil when err is not a KeyMesh server error.
func ErrorDetailOf(err error) *keymeshv1.ErrorDetail {
	var withStatus interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &withStatus) {
		return nil
	}
	for _, d := range withStatus.GRPCStatus().Details() {
		if detail, ok := d.(*keymeshv1.ErrorDetail); ok {
			return detail
		}
	}
	return nil
}

// ReasonOf returns the machine-readable reason of a KeyMesh server error, or
// ERROR_REASON_UNSPECIFIED when err carries none.
func ReasonOf(err error) keymeshv1.ErrorReason {
	if d := ErrorDetailOf(err); d != nil {
		return d.GetReason()
	}
	return keymeshv1.ErrorReason_ERROR_REASON_UNSPECIFIED
}

// RetryAfter returns the server's hint of when a key is expected to be available (sent with
// RESOURCE_EXHAUSTED), and whether there was one.
func RetryAfter(err error) (time.Duration, bool) {
	d := ErrorDetailOf(err)
	if d == nil || d.GetRetryAfter() == nil {
		return 0, false
	}
	return d.GetRetryAfter().AsDuration(), true
}

// leaseEnded reports whether err says the lease is already over (expired, released, revoked or
// unknown), which makes a final report moot rather than failed.
func leaseEnded(err error) bool {
	switch ReasonOf(err) {
	case keymeshv1.ErrorReason_ERROR_REASON_LEASE_EXPIRED,
		keymeshv1.ErrorReason_ERROR_REASON_LEASE_RELEASED,
		keymeshv1.ErrorReason_ERROR_REASON_LEASE_REVOKED,
		keymeshv1.ErrorReason_ERROR_REASON_LEASE_UNKNOWN:
		return true
	}
	return false
}
