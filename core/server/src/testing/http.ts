/** GraphQL over HTTP for tests that talk to a listening controller (in-process or a `gatehouse serve` process). */

/** A GraphQL POST to a controller over HTTP. */
export async function post(url: string, secret: string | null, query: string, variables?: Record<string, unknown>, headers: Record<string, string> = {}) {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(secret ? { authorization: `Bearer ${secret}` } : {}), ...headers },
    body: JSON.stringify({ query, variables }),
  });
  return { status: response.status, headers: response.headers, body: (await response.json()) as { data?: any; errors?: any[] } };
}
