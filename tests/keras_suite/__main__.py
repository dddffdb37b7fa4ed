import sys

from keras_suite.runner import main

sys.exit(main(sys.argv[1:]))
