/** The tiny request/reply of the churn suite (fixed, so every reply is verified byte for byte). */
export const CHURN_REQUEST = 'GET / HTTP/1.0\r\nHost: bench\r\n\r\n';
export const CHURN_REPLY = 'HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n';
