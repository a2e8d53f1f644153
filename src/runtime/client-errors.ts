/**
 * @module Node's HTTP server refuses some requests before the app sees them (headers over its
 * 16 KiB limit, requests that are not HTTP) and answers them with a bare status line. This answers
 * them as the app answers everything else: RFC 9457 problem+json.
 */
import type { Server } from 'node:http'
import type { Socket } from 'node:net'

import { HEADERS_LIMIT_BYTES } from '../api/app.ts'

/** Writes problem+json for requests Node's parser refuses, then closes the connection. */
export function answerClientErrors(server: Server): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    // Nothing to answer on a connection the client already closed.
    if (!socket.writable || err.code === 'ECONNRESET') {
      socket.destroy()
      return
    }
    const tooLarge = err.code === 'HPE_HEADER_OVERFLOW'
    const status = tooLarge ? 431 : 400
    const reason = tooLarge ? 'Request Header Fields Too Large' : 'Bad Request'
    const body = JSON.stringify({
      type: `urn:pgsched:problem:${tooLarge ? 'header_too_large' : 'validation'}`,
      title: tooLarge ? 'Request header fields too large' : 'Invalid request',
      status,
      detail: tooLarge
        ? `the request headers are larger than ${HEADERS_LIMIT_BYTES} bytes in all`
        : 'the request is not valid HTTP',
    })
    socket.end(
      `HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/problem+json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    )
  })
}
