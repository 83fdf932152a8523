set terminal pngcairo size 900,480 font 'DejaVu Sans,10'
set output 'pam.png'
set multiplot layout 1,2 title 'pam_authenticate() per call'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set xtics rotate by -35 scale 0
set grid ytics
set yrange [0:*]
set ylabel 'calls/s'
plot 'pam.dat' using 2:xtic(1) title 'calls/s' lc rgb '#3b73b9'
set ylabel 'latency (ms)'
plot 'pam.dat' using 3:xtic(1) title 'p50' lc rgb '#6aa84f', \
     '' using 4 title 'p99' lc rgb '#cc0000'
unset multiplot
