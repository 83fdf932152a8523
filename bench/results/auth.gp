set terminal pngcairo size 900,480 font 'DejaVu Sans,10'
set output 'auth.png'
set title 'One authentication through Dovecot auth (auth-client socket, sequential)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set grid ytics
set ylabel 'latency (ms)'
set yrange [0:*]
plot 'auth.dat' using 2:xtic(1) title 'p50' lc rgb '#6aa84f', \
     '' using 3 title 'p90' lc rgb '#f1c232', \
     '' using 4 title 'p99' lc rgb '#cc0000'
