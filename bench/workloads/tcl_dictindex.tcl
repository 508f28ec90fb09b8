#!/usr/bin/tclsh
# Tcl inverted index built from documents that arrive in paced batches.
#
#     tclsh tcl_dictindex.tcl SECONDS DOCS_PER_S GROWTH SNAPSHOT_EVERY
#     e.g. tclsh bench/workloads/tcl_dictindex.tcl 60 400 1.03 15
#
# Paced on the monotonic clock ([clock milliseconds] against the start) in
# 0.25 s ticks, the indexer receives DOCS_PER_S documents a second, the
# rate multiplied by GROWTH every second (a crawl speeding up).  Each
# document is 40-120 words drawn from a 200,000-word vocabulary by a fixed
# linear congruential generator (seed 7: the same documents every run) and
# is kept whole (a Tcl list, as the "stored fields"); every distinct word
# of it is appended to that word's postings list in a dict (term -> list of
# document ids).  Every SNAPSHOT_EVERY seconds a snapshot sorts the
# vocabulary ([lsort [dict keys ...]]) and builds the term -> document
# frequency table as a new dict, logs its size and drops it: a short
# spike above the growing line.  Tcl's allocator keeps what it frees.
# Nothing is written to disk.
lassign $argv seconds rate growth snap
set seed 7
proc rnd {n} {
    global seed
    set seed [expr {($seed * 1103515245 + 12345) & 0x7fffffff}]
    return [expr {$seed % $n}]
}
set index [dict create]
set docs {}
set t0 [clock milliseconds]
set tick 0
set made 0
set owed 0.0
set nextsnap $snap
while 1 {
    set due [expr {$t0 + $tick * 250}]
    set now [clock milliseconds]
    if {$due > $now} { after [expr {$due - $now}] }
    set t [expr {($due - $t0) / 1000.0}]
    if {$t >= $seconds} break
    set r [expr {$rate * pow($growth, $t)}]
    set owed [expr {$owed + $r * 0.25}]
    while {$owed >= 1} {
        set n [expr {40 + [rnd 81]}]
        set words {}
        for {set i 0} {$i < $n} {incr i} {
            # a skewed draw: small ids (common words) come up far more often
            set w [rnd 200000]
            set w [expr {$w * [rnd 200000] / 200000}]
            lappend words "w$w"
        }
        lappend docs $words
        foreach w [lsort -unique $words] {
            dict lappend index $w $made
        }
        incr made
        set owed [expr {$owed - 1}]
    }
    if {$t >= $nextsnap} {
        set terms [lsort [dict keys $index]]
        set df [dict create]
        foreach w $terms { dict set df $w [llength [dict get $index $w]] }
        puts "t=[format %.1f $t] docs=$made terms=[llength $terms]"
        flush stdout
        unset terms df
        set nextsnap [expr {$nextsnap + $snap}]
    }
    incr tick
}
puts "done docs=$made terms=[dict size $index]"
