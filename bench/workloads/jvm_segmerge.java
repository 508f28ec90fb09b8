// JVM search indexer: segments are flushed in stages and merged, tiered.
//
// usage: javac -d DIR jvm_segmerge.java
//        java -Xmx2g -XX:+UseG1GC -cp DIR JvmSegMerge SECONDS DOCS_PER_S SEG_SECONDS MERGE_FACTOR
//   e.g. java -Xmx2g -XX:+UseG1GC -cp /var/tmp/mgrt7-java JvmSegMerge 60 6000 3 4
//
// Paced on System.nanoTime in 100 ms ticks, the indexer receives DOCS_PER_S
// documents a second (30-90 term ids each, skewed towards common terms,
// from a SplittableRandom with seed 29: the same documents every run) into
// an in-memory buffer (a HashMap term -> growable int[] postings, plus each
// document's stored field, a ~300-byte String).  Every SEG_SECONDS the
// buffer is frozen into an immutable segment (sorted term ids, one packed
// int[] of postings, the stored fields) that is kept.  When MERGE_FACTOR
// segments of one tier exist they are merged into one segment of the next
// tier: the merged arrays are built while the inputs are still held (a
// temporary doubling of those segments), then the inputs are dropped.  All
// segments stay in the heap (nothing is written out), so the live heap
// grows with every flush; G1 grows the committed heap in steps.
// Nothing is written to disk.
import java.util.*;

class JvmSegMerge {
    static final class Segment {
        final int tier; final int[] terms; final int[] offsets; final int[] postings; final String[] stored;
        Segment(int tier, int[] terms, int[] offsets, int[] postings, String[] stored) {
            this.tier = tier; this.terms = terms; this.offsets = offsets; this.postings = postings; this.stored = stored;
        }
    }

    static Segment freeze(HashMap<Integer, int[]> buf, ArrayList<String> stored, int base) {
        int[] terms = new int[buf.size()];
        int k = 0, total = 0;
        for (Map.Entry<Integer, int[]> e : buf.entrySet()) { terms[k++] = e.getKey(); total += e.getValue()[0]; }
        Arrays.sort(terms);
        int[] offsets = new int[terms.length + 1];
        int[] postings = new int[total];
        int p = 0;
        for (int i = 0; i < terms.length; i++) {
            int[] list = buf.get(terms[i]);
            offsets[i] = p;
            System.arraycopy(list, 1, postings, p, list[0]);
            p += list[0];
        }
        offsets[terms.length] = p;
        return new Segment(0, terms, offsets, postings, stored.toArray(new String[0]));
    }

    static Segment merge(List<Segment> in, int tier) {
        TreeMap<Integer, Integer> sizes = new TreeMap<>();
        int nstored = 0;
        for (Segment s : in) {
            nstored += s.stored.length;
            for (int i = 0; i < s.terms.length; i++) sizes.merge(s.terms[i], s.offsets[i + 1] - s.offsets[i], Integer::sum);
        }
        int[] terms = new int[sizes.size()];
        int[] offsets = new int[terms.length + 1];
        int total = 0, k = 0;
        for (Map.Entry<Integer, Integer> e : sizes.entrySet()) { terms[k] = e.getKey(); offsets[k] = total; total += e.getValue(); k++; }
        offsets[terms.length] = total;
        int[] postings = new int[total];
        int[] fill = Arrays.copyOf(offsets, offsets.length);
        String[] stored = new String[nstored];
        int sp = 0;
        for (Segment s : in) {
            for (int i = 0; i < s.terms.length; i++) {
                int j = Arrays.binarySearch(terms, s.terms[i]);
                int n = s.offsets[i + 1] - s.offsets[i];
                System.arraycopy(s.postings, s.offsets[i], postings, fill[j], n);
                fill[j] += n;
            }
            for (String d : s.stored) stored[sp++] = new String(d.toCharArray());  // re-encoded copy
        }
        return new Segment(tier, terms, offsets, postings, stored);
    }

    public static void main(String[] a) throws Exception {
        double seconds = Double.parseDouble(a[0]);
        double rate = Double.parseDouble(a[1]);
        double segSeconds = Double.parseDouble(a[2]);
        int factor = Integer.parseInt(a[3]);
        SplittableRandom rng = new SplittableRandom(29);
        List<Segment> segments = new ArrayList<>();
        HashMap<Integer, int[]> buf = new HashMap<>();
        ArrayList<String> stored = new ArrayList<>();
        long t0 = System.nanoTime();
        int tick = 0, doc = 0, base = 0, flushes = 0, merges = 0;
        double owed = 0, nextFlush = segSeconds;
        StringBuilder sb = new StringBuilder();
        while (true) {
            long due = t0 + tick * 100_000_000L;
            long now = System.nanoTime();
            if (due > now) Thread.sleep((due - now) / 1_000_000L, (int) ((due - now) % 1_000_000L));
            double t = tick * 0.1;
            if (t >= seconds) break;
            owed += rate * 0.1;
            while (owed >= 1) {
                owed -= 1;
                int n = 30 + rng.nextInt(61);
                sb.setLength(0);
                for (int i = 0; i < n; i++) {
                    int term = (int) ((long) rng.nextInt(500_000) * rng.nextInt(500_000) / 500_000);
                    int[] list = buf.get(term);
                    if (list == null) { list = new int[4]; buf.put(term, list); }
                    if (list[0] + 1 >= list.length) { list = Arrays.copyOf(list, list.length * 2); buf.put(term, list); }
                    list[++list[0]] = doc;
                    if (i < 40) sb.append("t").append(term).append(' ');
                }
                stored.add(sb.toString());
                doc++;
            }
            if (t >= nextFlush) {
                segments.add(freeze(buf, stored, base));
                base = doc; buf = new HashMap<>(); stored = new ArrayList<>();
                flushes++;
                nextFlush += segSeconds;
                for (int tier = 0; ; tier++) {
                    List<Segment> same = new ArrayList<>();
                    for (Segment s : segments) if (s.tier == tier) same.add(s);
                    if (same.size() < factor) break;
                    Segment m = merge(same, tier + 1);
                    segments.removeAll(same);
                    segments.add(m);
                    merges++;
                }
                Runtime r = Runtime.getRuntime();
                System.out.printf("t=%.1f docs=%d segments=%d flushes=%d merges=%d heap=%dMiB committed=%dMiB%n",
                        t, doc, segments.size(), flushes, merges,
                        (r.totalMemory() - r.freeMemory()) >> 20, r.totalMemory() >> 20);
            }
            tick++;
        }
        System.out.println("done docs=" + doc + " segments=" + segments.size());
    }
}
