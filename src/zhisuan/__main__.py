from zhisuan.cli.app import main

main()
