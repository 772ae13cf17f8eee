package keymesh

import (
	"net/http"
	"strconv"
)

// These mirror the exported shapes of the official SDKs' errors, which the classifier reads
// without depending on the SDKs.

// openaiError has the fields of openai-go's *openai.Error.
type openaiError struct {
	Code       string
	Message    string
	Param      string
	Type       string
	StatusCode int
	Request    *http.Request
	Response   *http.Response
}

func (e *openaiError) Error() string { return strconv.Itoa(e.StatusCode) + " " + e.Message }

// anthropicError has the fields of anthropic-sdk-go's *anthropic.Error; the error type is in
// the body, read through RawJSON.
type anthropicError struct {
	RequestID  string
	StatusCode int
	Request    *http.Request
	Response   *http.Response
	raw        string
}

func (e *anthropicError) Error() string   { return strconv.Itoa(e.StatusCode) + " " + e.raw }
func (e *anthropicError) RawJSON() string { return e.raw }

// geminiError has the fields of google.golang.org/genai's APIError (a value type).
type geminiError struct {
	Code    int
	Message string
	Status  string
	Details []map[string]any
}

func (e geminiError) Error() string { return e.Status + ": " + e.Message }

// response is a provider HTTP response carrying headers.
func response(status int, headers map[string]string) *http.Response {
	h := http.Header{}
	for k, v := range headers {
		h.Set(k, v)
	}
	return &http.Response{StatusCode: status, Header: h}
}
