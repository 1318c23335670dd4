/**
 * The shared-results plugin (graphql/shared-subscription-results.ts) on a small schema: an event
 * object handed to many subscribers of one document and variables is executed once and the same
 * result goes to each; other documents or variables get their own execution; fields not listed
 * run once per subscriber as before; a subscriber leaving ends its source.
 */
import { createSchema, createYoga } from 'graphql-yoga';
import { parse, type ExecutionResult } from 'graphql';
import { expect, it } from 'vitest';
import { sharedSubscriptionResults } from '../src/graphql/shared-subscription-results.js';
import { Mailbox } from '../src/support/mailbox.js';

it('executes an event once per document and variables, and only for the fields it lists', async () => {
  let resolved = 0;
  const feeds: Mailbox<{ n: number }>[] = [];
  const feed = () => {
    const mailbox: Mailbox<{ n: number }> = new Mailbox(
      100,
      () => new Error('overflow'),
      () => feeds.splice(feeds.indexOf(mailbox), 1),
    );
    feeds.push(mailbox);
    return mailbox;
  };
  const schema = createSchema({
    typeDefs: `type Tick { n: Int! scaled(by: Int!): Int! }
      type Query { ok: Boolean }
      type Subscription { tick: Tick! other: Tick! }`,
    resolvers: {
      Tick: {
        n: (t: { n: number }) => (resolved++, t.n),
        scaled: (t: { n: number }, { by }: { by: number }) => t.n * by,
      },
      Subscription: { tick: { subscribe: feed, resolve: (t: unknown) => t }, other: { subscribe: feed, resolve: (t: unknown) => t } },
    },
  });
  const yoga = createYoga({ schema, plugins: [sharedSubscriptionResults(['tick'])] });
  const { subscribe, contextFactory } = yoga.getEnveloped({} as never);
  const start = async (query: string, variables: Record<string, unknown> = {}) =>
    (await subscribe({
      schema: yoga.getEnveloped({} as never).schema,
      document: parse(query),
      variableValues: variables,
      contextValue: await contextFactory(),
    })) as AsyncIterableIterator<ExecutionResult>;

  const same = await Promise.all(Array.from({ length: 5 }, () => start('subscription($by: Int!) { tick { n scaled(by: $by) } }', { by: 2 })));
  const otherVariables = await start('subscription($by: Int!) { tick { n scaled(by: $by) } }', { by: 3 });
  const otherDocument = await start('subscription { tick { n } }');
  const notListed = await Promise.all([start('subscription { other { n } }'), start('subscription { other { n } }')]);
  expect(feeds).toHaveLength(9);

  const event = { n: 21 };
  const results = [...same, otherVariables, otherDocument, ...notListed].map((s) => s.next());
  for (const f of [...feeds]) f.push(event);
  const got = (await Promise.all(results)).map((r) => r.value as ExecutionResult);
  expect(got.slice(0, 5).every((r) => r === got[0])).toBe(true); // one result object for the five
  expect(got[0]).toEqual({ data: { tick: { n: 21, scaled: 42 } } });
  expect(got[5]).toEqual({ data: { tick: { n: 21, scaled: 63 } } });
  expect(got[6]).toEqual({ data: { tick: { n: 21 } } });
  expect(got[7]).toEqual({ data: { other: { n: 21 } } });
  expect(got[8]).not.toBe(got[7]);
  // the five shared one execution; the other variables, the other document and the unlisted two ran their own
  expect(resolved).toBe(1 + 1 + 1 + 2);

  // a new event object is a new execution; a subscriber that leaves ends its source
  const next = same[0]!.next();
  for (const f of [...feeds]) f.push({ n: 1 });
  expect((await next).value).toEqual({ data: { tick: { n: 1, scaled: 2 } } });
  await same[1]!.return!();
  expect(feeds).toHaveLength(8);
});
