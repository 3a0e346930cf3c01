package redisinfer

import (
	"errors"
	"fmt"
)

// Status is a reply status (docs/protocol.md §6), or one of the client's own: BUSY and TIMEOUT.
type Status string

// The statuses of protocol version 1, and TIMEOUT (the client gave up waiting).
const (
	StatusOK                 Status = "OK"
	StatusInvalidArgument    Status = "INVALID_ARGUMENT"
	StatusMalformed          Status = "MALFORMED"
	StatusUnsupportedVersion Status = "UNSUPPORTED_VERSION"
	StatusTooLarge           Status = "TOO_LARGE"
	StatusModelNotFound      Status = "MODEL_NOT_FOUND"
	StatusExpired            Status = "EXPIRED"
	StatusBusy               Status = "BUSY"
	StatusInternal           Status = "INTERNAL"
	StatusUnavailable        Status = "UNAVAILABLE"
	StatusTimeout            Status = "TIMEOUT"
)

// StatusError is a request that did not succeed: a reply with a status other than OK (Reply holds it),
// a request refused by backpressure (BUSY, nothing was added), or one the client stopped waiting for
// (TIMEOUT). Match a status with errors.Is(err, ErrExpired) and friends, or take the details with
// errors.As(err, &statusErr).
type StatusError struct {
	Status  Status
	ID      string // the request id
	Message string // the reply's error text, or the client's explanation
	Reply   *Reply // the reply, when there was one
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s: %s (request %s)", e.Status, e.Message, e.ID)
}

// Is reports whether target is the sentinel of this error's status (ErrExpired for EXPIRED...).
func (e *StatusError) Is(target error) bool {
	s, ok := target.(statusSentinel)
	return ok && Status(s) == e.Status
}

type statusSentinel Status

func (s statusSentinel) Error() string { return string(s) }

// Sentinels for errors.Is, one per status that is not OK.
var (
	ErrInvalidArgument    error = statusSentinel(StatusInvalidArgument)
	ErrMalformed          error = statusSentinel(StatusMalformed)
	ErrUnsupportedVersion error = statusSentinel(StatusUnsupportedVersion)
	ErrTooLarge           error = statusSentinel(StatusTooLarge)
	ErrModelNotFound      error = statusSentinel(StatusModelNotFound)
	ErrExpired            error = statusSentinel(StatusExpired)
	// ErrBusy: the request stream's backlog is at the workers' max_backlog; the request was not added.
	ErrBusy        error = statusSentinel(StatusBusy)
	ErrInternal    error = statusSentinel(StatusInternal)
	ErrUnavailable error = statusSentinel(StatusUnavailable)
	// ErrTimeout: no reply within the client's own wait (a reply that comes later is dropped).
	ErrTimeout error = statusSentinel(StatusTimeout)
)

// ErrInvalidInput wraps every refusal before sending: a tensor whose data does not match its shape, an
// unknown datatype, a parameter of an unsupported type. Nothing was added to the stream.
var ErrInvalidInput = errors.New("invalid input")

// ErrClosed is returned for requests still waiting when the client was closed, and by calls after Close.
var ErrClosed = errors.New("redisinfer: client closed")

func invalidInput(format string, args ...interface{}) error {
	return fmt.Errorf("%w: %s", ErrInvalidInput, fmt.Sprintf(format, args...))
}
