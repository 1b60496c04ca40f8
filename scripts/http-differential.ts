/**
 * The codec's differential run at scale: `npm exec -- node scripts/http-differential.ts 1000000`
 * feeds COUNT generated inputs (mutated smuggling forms and valid pipelines, default 100,000)
 * to llhttp and to the codec, fails on any input llhttp refuses that the codec accepts, and
 * checks that valid requests parse the same. Prints one counterexample and exits 1 on failure.
 */
import fc from 'fast-check';
import { lenientOver, mutatedInput, runCodec, runLlhttp, validInput } from '../test/http/codec-differential.ts';

const count = Number(process.argv[2] ?? 100_000);
const seed = Number(process.argv[3] ?? Date.now() % 2 ** 31);
const started = performance.now();
let refusedByLlhttp = 0;
let refusedByCodecOnly = 0;

fc.assert(
  fc.property(mutatedInput, ({ input, splits }) => {
    const ll = runLlhttp(input);
    const codec = runCodec(input, splits);
    if (ll.error !== undefined) refusedByLlhttp++;
    else if (codec.error !== undefined) refusedByCodecOnly++;
    const why = lenientOver(ll, codec);
    if (why !== undefined) throw new Error(`${why}: ${JSON.stringify(input.toString('latin1'))}`);
  }),
  { numRuns: count, seed },
);
fc.assert(
  fc.property(validInput, ({ input, splits }) => {
    const ll = runLlhttp(input);
    const codec = runCodec(input, splits);
    if (ll.error !== undefined || codec.error !== undefined || JSON.stringify(ll.messages) !== JSON.stringify(codec.messages)) {
      throw new Error(`disagree on a valid input: ${JSON.stringify(input.toString('latin1'))}`);
    }
  }),
  { numRuns: Math.ceil(count / 10), seed },
);
const secs = ((performance.now() - started) / 1000).toFixed(1);
console.log(
  `http-differential: ${count} mutated + ${Math.ceil(count / 10)} valid inputs, seed ${seed}, ${secs}s: ` +
    `never more lenient than llhttp (llhttp refused ${refusedByLlhttp}, only the codec refused ${refusedByCodecOnly})`,
);
